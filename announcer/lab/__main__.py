from announcer.lab.cli import main

main()
