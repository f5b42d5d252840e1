"""Cost: what drives the bill, and the cheapest routing that meets each tier's floor."""
