"""Independent references the tests compare the package against."""
