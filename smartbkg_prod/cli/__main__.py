from smartbkg_prod.cli import main

main()
