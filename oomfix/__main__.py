from oomfix.cli import main

main()
