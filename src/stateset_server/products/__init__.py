"""Products: the catalogue by SKU — name, category, price, and whether stock is tracked."""
