from motionstream.cli import main

raise SystemExit(main())
