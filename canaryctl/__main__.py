from canaryctl.cli import main

main()
