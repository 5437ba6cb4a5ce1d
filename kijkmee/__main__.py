from kijkmee.cli import main

raise SystemExit(main())
