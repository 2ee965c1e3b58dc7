from apimart_cli.cli import main

main()
