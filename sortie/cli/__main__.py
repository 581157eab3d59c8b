from sortie.cli.main import main

main()
