from setuptools import find_packages, setup

setup(
    name="minibert",
    version="0.1.0",
    description="BERT written from scratch in NumPy (with Numba kernels), checked number by number against PyTorch",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["minibert", "minibert.*"]),
    package_data={"minibert": ["view_assets/*"]},  # the attention page's HTML, JS and CSS (minibert/view.py)
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
            # tests/test_view.py drives the system Chromium (Debian package `chromium`, not
            # Playwright's own browser download) through Playwright.
            "playwright",
        ],
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
        ],
        # tutorials/: notebooks kept as jupytext py:percent files, executed by nbclient in CI.
        "tutorials": ["jupytext", "nbclient", "nbformat", "ipykernel", "matplotlib"],
    },
    entry_points={"console_scripts": ["minibert=minibert.cli:main"]},
)
