"""Sample sets: image files and archives read in batches, resized and normalised."""
