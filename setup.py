"""
Packaging for Artcast: a push server for live data over HTTP long polls.
"""

from setuptools import find_packages, setup

setup(
    name="artcast",
    version="0.1.0",
    description="Push live data from multicast sources to anything that speaks HTTP.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(exclude=["tests", "tests.*", "bench", "bench.*"])
    + ["twisted.plugins"],
    package_data={
        "artcast": ["py.typed"],
        # The browser client served at /artcast.js.
        "artcast.server.outlets": ["artcast.js"],
        "twisted": ["plugins/artcast_plugin.py"],
    },
    include_package_data=True,
    install_requires=[
        "twisted>=24.7.0",
        "klein>=23.5.0",
        "treq>=23.11.0",
        "autobahn>=23.6.1",
        "prometheus_client>=0.17.0",
        "attrs>=22.2.0",
        "txredisapi>=1.6.0",
        "paho-mqtt>=2.0",
    ],
    extras_require={
        "test": [
            "hypothesis>=6.80.0",
            # tests/test_docs.py runs the documentation's code blocks.
            "sybil>=10",
            # The benchmark's short mode runs in the test suite, against the
            # Tornado baseline.
            "tornado>=6.3",
        ],
        "bench": [
            "tornado>=6.3",
        ],
    },
    entry_points={
        "console_scripts": [
            "artcast-send = artcast.send:main",
            "artcast-follow = artcast.client:main",
            "artcast-watch = artcast.watch:main",
        ],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
    ],
)
