"""Files an audit writes for the dashboard: embeddings, index, 2-D maps, channel galleries."""
