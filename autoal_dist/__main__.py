from autoal_dist.cli import main

raise SystemExit(main())
