from setuptools import find_packages, setup

setup(
    name="minibert",
    version="0.1.0",
    description="BERT written from scratch in NumPy (with Numba kernels), checked number by number against PyTorch",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["minibert", "minibert.*"]),
    python_requires=">=3.10",
    install_requires=["numpy", "numba", "h5py"],
    extras_require={
        # The reference stack. torch is pinned to the CPU build that installs from local disk;
        # transformers is pinned because attention scaling, masking and tokenizer classes change
        # between releases (the version is recorded in every fixture).
        "dev": [
            "pytest",
            "hypothesis",
            "torch==2.13.0",
            "transformers==5.23.0",
            "safetensors",
            "dask",  # tests/test_distributed.py: `encode --dask` on a LocalCluster
            "distributed",
            "tqdm",  # tests/test_corpus.py: the progress bar of `encode --input`
        ],
        # `minibert encode --input`: the progress bar (without it, no bar).
        "corpus": ["tqdm"],
        # `minibert encode --input ... --dask local:N|tcp://...`: Dask workers (docs/scaling.md).
        "dask": ["dask", "distributed", "tqdm"],
        # `minibert trace --plot`: attention heat maps as static PNG files.
        "viz": ["matplotlib"],
        # benchmarks/bench.py: PyTorch eager and ONNX Runtime (torch.onnx.export needs onnxscript).
        "bench": [
            "torch==2.13.0",
            "transformers==5.23.0",
            "safetensors",
            "onnx",
            "onnxruntime",
            "onnxscript",
            "sentence-transformers",  # benchmarks/bench_corpus.py
            "dask",
            "distributed",
        ],
        # tutorials/: notebooks kept as jupytext py:percent files, executed by nbclient in CI.
        "tutorials": ["jupytext", "nbclient", "nbformat", "ipykernel", "matplotlib"],
    },
    entry_points={"console_scripts": ["minibert=minibert.cli:main"]},
)
