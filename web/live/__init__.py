"""Lab managers' live pages: the board of device states, a device's day, and the rejected messages."""
