r"""One run of the recipe experiment by hand (`python -m vbanana.experiments.recipe` runs all of them).

  python -m vbanana.main --config=configs/recipe.py:stage=pretrain,steps=200 --workdir=runs/recipe/pretrain
  python -m vbanana.main --config=configs/recipe.py:stage=instruct,init_from=runs/recipe/pretrain \
      --workdir=runs/recipe/instruct

stage: pretrain (generation + editing only), instruct (the mixture, from init_from's EMA params), scratch
(the same mixture from random init). vision_share: the fraction of examples that are vision tasks (depth,
normals, semantic, instance, referring, split equally); the rest is generation and editing 7:3. Evals run
at the end on the test split (eval_limit scenes per task, eval_steps sampler steps).
"""

from vbanana import config_lib
from vbanana.experiments import recipe


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, stage="pretrain", vision_share=0.1, init_from="", size="tiny", res=32,
                             steps=200, batch=16, lr=1e-3, data_dir="runs/data/scenes", num_train=512,
                             num_test=32, eval_limit=16, eval_steps=4, seed=0)
  return recipe.make_config(**arg.to_dict())
