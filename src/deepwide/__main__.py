from deepwide.cli import main

raise SystemExit(main())
