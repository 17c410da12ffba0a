"""An outside method written from docs/method_api.md alone (imports only beyondbp.methods.api): BP that
keeps an exponential moving average of the weights in buffers, updated after each optimizer step,
and logs its distance to the weights. Plus one class that forgets compute_per_token."""
