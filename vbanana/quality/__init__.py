r"""Generation quality that does not use the model under test: the scenes attribute network.

A small fixed CNN (vbanana/quality/net.py: five 3x3 convs, max+mean pooling, a 128-d feature layer, 175k
parameters, 0.7 MB) was trained ONCE on 10,000 rendered scenes of the built-in dataset (train split, 32x32)
to say which of the 4 shapes and 9 colours are present and how many objects are visible; its weights ship
beside this file (scenes_net.safetensors, scenes_net.json with the training record). Any image size is
resized (antialiased) to 32x32 first. Trained with

  PYTHONPATH=. python scripts/train_quality_net.py     # 10,000 train / 1,000 test scenes, 15 epochs, ~5 min CPU

Why model-independent: the net never sees the generator, its samples or its training; it is frozen and
versioned with the repository, so its scores compare models, runs and checkpoints on the same footing
(like Inception features for FID, but for this domain: it is meaningful for scenes-like images only).

The metrics (vbanana.quality.metrics; the generation evaluators report them as `<eval>/quality/...`):
- `fd` ("scenes FD"): Frechet distance between Gaussians fitted to the 128-d features of the generated
  images and of the real images of the same examples. Lower is better. It is biased upwards for small sets
  (about D / N), so compare at equal N; the floor is real-vs-real on held-out images (train vs test split):
  N=16: 332, N=64: 78, N=256: 17, N=1000: 5.5. For scale (N=1000): a 3x3 box blur of the real images gives
  266, uniform noise images 10,955.
- `attr_recall`: per generated image, the fraction of the shapes and colours its caption names (the visible
  objects of the sample's `objects`, the same rule the caption uses) that the net detects; mean over images.
- `attr_balanced`: per image, the mean of that recall and the fraction of NOT-named attributes the net
  does not detect. Anything that ignores the image scores about 0.5 (chance); higher is better.
- `count_acc`: the net's object count (0-6) equals the number of visible objects.
- `*_real`: the same scores on the real images: the ceiling the net itself reaches.
Measured on 1,000 real test images: attr_balanced 0.889, attr_recall 0.937, count_acc 0.633; on uniform
noise images: attr_balanced 0.537 (chance), attr_recall 0.863 (the net guesses the frequent shapes).
"""

from vbanana.quality.metrics import GenerationQuality, attribute_scores, caption_attributes, frechet_distance
from vbanana.quality.net import ATTRIBUTES, QualityNet, attribute_labels, load, load_default

__all__ = ["GenerationQuality", "attribute_scores", "caption_attributes", "frechet_distance", "ATTRIBUTES",
           "QualityNet", "attribute_labels", "load", "load_default"]
