from stateset_server.cli import main

raise SystemExit(main())
