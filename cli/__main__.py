from weightlift.cli.main import main

main()
