from ffcv_amcl.compare.command import main

main()
