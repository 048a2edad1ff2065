"""The training-data generator: recipes, labelled samples, shards on disk, and reading them back.

    twin generate datasets/recipes/graphene-dopants.toml --out data/graphene --n 256 --workers 2
    ds = twin.generate.open_dataset("data/graphene")          # lazy xarray.Dataset, dims (sample, y, x)
    for batch in twin.generate.batches("data/graphene", 32, jax.random.key(0)): ...
"""

from twin.generate.reading import batches as batches
from twin.generate.reading import open_dataset as open_dataset
