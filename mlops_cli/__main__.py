from mlops_cli import main

main()
