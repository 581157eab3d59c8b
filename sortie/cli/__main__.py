from sortie.cli.main import main

raise SystemExit(main())
