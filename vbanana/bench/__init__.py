"""The paper's benchmarks with their published protocols, and one command for its Table 1.

  paper.py       the paper's Table 1 (and Tables 3-4) numbers, as printed
  protocols.py   per-dataset constants (crops, caps, normal frames), the pure scoring functions (SA-Co pmF1)
                 and the nuScenes LiDAR-to-camera projection
  options.py     the protocol choices where the peers' evaluation code splits, as named options
  readers.py     TFDS readers (NYU, Cityscapes, RefCOCOg) and folder readers in each dataset's own layout
                 (nuScenes tables, SA-Co/Gold COCO JSON with its RLE decoder)
  benchmarks.py  the registry: task, data location, reader and protocol of each benchmark
  runner.py      a model through every present benchmark -> paper_table.md
  table.py       the markdown table

docs/benchmarks.md lists each benchmark's protocol, data layout and the command.
"""
