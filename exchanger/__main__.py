from exchanger.cli import main

raise SystemExit(main())
