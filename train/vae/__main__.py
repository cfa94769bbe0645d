from train.vae.loop import main

raise SystemExit(main())
