"""Lab managers' device registry pages: the devices of their facilities, adding one, its broker credential."""
