from audit.cli.app import exit_with, main

exit_with(main())
