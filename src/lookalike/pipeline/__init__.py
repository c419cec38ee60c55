"""The jobs the command line runs, as library functions a user can import."""
