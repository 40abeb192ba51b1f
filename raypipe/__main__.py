from raypipe.cli import main

main()
