from imagekit.cli import main

raise SystemExit(main())
