"""The built-in scenes dataset: a procedural 3D scene renderer with exact ground truth.

Nothing can be downloaded, so the project makes its own data: objects (spheres, boxes, cylinders, cones)
of named colours, two sizes and two materials stand on a checkered ground plane, sometimes in front of a
back wall, seen by a pitched pinhole camera and lit by a directional light that casts shadows. A vectorised
NumPy ray caster intersects every pixel's ray analytically with every primitive, so the ground truth is
exact per pixel; only the RGB image is anti-aliased (supersampled), the labels come from the ray through
each pixel's centre.

Conventions (shared with docs/interfaces.md):
- World: metres, +y up, the ground is y = 0. The camera stands at (0, height, 0) and looks along -z,
  pitched down by `pitch`; pixel (i, j) looks through (j + 0.5, i + 0.5).
- `depth` is z-depth: the distance along the camera's viewing axis (not along the ray), in metres, float32;
  0 where the ray meets nothing (sky). NYU-style datasets store the same quantity.
- `normals` are unit vectors in camera coordinates (+x right, +y up, +z towards the viewer), float32;
  (0, 0, 0) on sky pixels.
- `semantic` holds indices into `CLASS_NAMES` (background = sky); `instance` is 1 + the object's index in
  `scene.objects` where that object is visible, 0 elsewhere.

A torus (a quartic) is left out on purpose: four quadric shapes give enough variety at 32-128 px and keep
every intersection a closed-form quadratic.

Everything is a pure function of (seed, split, index): `make_sample(split, index, resolution)` gives the
same bytes every time and on every machine with the same NumPy.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Sequence

import numpy as np

SHAPES = ("sphere", "box", "cylinder", "cone")
CLASS_NAMES = ("background", "ground", "wall") + SHAPES
BACKGROUND, GROUND, WALL = 0, 1, 2
SHAPE_CLASS = {shape: 3 + i for i, shape in enumerate(SHAPES)}

COLORS = {  # display RGB in [0, 1], far apart so the names are unambiguous in small images
    "red": (0.80, 0.12, 0.10),
    "green": (0.15, 0.62, 0.18),
    "blue": (0.13, 0.25, 0.85),
    "yellow": (0.92, 0.82, 0.12),
    "purple": (0.50, 0.18, 0.68),
    "cyan": (0.10, 0.72, 0.78),
    "orange": (0.95, 0.50, 0.08),
    "white": (0.93, 0.93, 0.93),
    "gray": (0.42, 0.42, 0.42),
}
SIZES = {"small": 0.32, "large": 0.55}  # the scale s of a shape, in metres (a sphere's radius)
MATERIALS = ("matte", "shiny")
SPLITS = {"train": 0, "validation": 1, "test": 2}

_EPS = 1e-6            # smallest ray parameter that counts as a hit
_SHADOW_OFFSET = 1e-4  # shadow rays start this far off the surface, against self-shadowing
_GAP = 0.05            # minimum clearance between objects' footprints, in metres
_MIN_VISIBLE_PIXELS = 4  # an object with fewer visible pixels is not described in the text
GROUND_EXTENT = 20.0  # metres: the ground is the square |x|, |z| <= this; keeps depth finite


@dataclasses.dataclass(frozen=True)
class Obj:
  """One object standing on the ground at (x, 0, z), turned by `yaw` radians about +y."""
  shape: str
  color: str
  size: str
  material: str
  x: float
  z: float
  yaw: float = 0.0

  @property
  def scale(self) -> float:
    return SIZES[self.size]

  @property
  def footprint(self) -> float:
    """Radius of a vertical cylinder that contains the object: no interpenetration if these don't overlap."""
    s = self.scale
    return {"sphere": s, "box": 0.85 * s * math.sqrt(2.0), "cylinder": 0.8 * s, "cone": s}[self.shape]

  @property
  def height(self) -> float:
    s = self.scale
    return {"sphere": 2 * s, "box": 1.7 * s, "cylinder": 1.8 * s, "cone": 2 * s}[self.shape]


@dataclasses.dataclass(frozen=True)
class Camera:
  height: float  # metres above the ground
  pitch: float   # radians below the horizon
  fov: float     # horizontal field of view, radians

  def axes(self) -> np.ndarray:
    """Rows: the camera's right, up and backward (+z, towards the viewer) axes in world coordinates."""
    c, s = math.cos(self.pitch), math.sin(self.pitch)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])

  @property
  def position(self) -> np.ndarray:
    return np.array([0.0, self.height, 0.0])


@dataclasses.dataclass(frozen=True)
class Light:
  direction: tuple[float, float, float]  # unit vector towards the light
  intensity: float
  ambient: float


@dataclasses.dataclass(frozen=True)
class Scene:
  objects: tuple[Obj, ...]
  camera: Camera
  light: Light
  wall_z: float | None  # the back wall is the plane z = wall_z (facing +z), or no wall
  ground_tint: tuple[float, float, float]


# ----------------------------------------------------------------------------------------------------
# Sampling scenes.


def scene_rng(split: str, index: int, seed: int = 0, stream: int = 0) -> np.random.Generator:
  """The generator for one record: a pure function of (seed, split, index); streams keep parts apart."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
  if index < 0:
    raise ValueError(f"index must be >= 0, got {index}")
  return np.random.default_rng([seed, SPLITS[split], index, stream])


def project(camera: Camera, points: np.ndarray, width: int = 2, height: int = 2) -> np.ndarray:
  """World points (N, 3) -> (N, 3) of (column, row, z-depth); pixel units of a width x height image."""
  rel = np.asarray(points, np.float64) - camera.position
  cam = rel @ camera.axes().T
  depth = -cam[:, 2]
  focal = 0.5 * width / math.tan(0.5 * camera.fov)
  col = 0.5 * width + focal * cam[:, 0] / depth
  row = 0.5 * height - focal * cam[:, 1] / depth
  return np.stack([col, row, depth], axis=-1)


def _in_view(camera: Camera, obj: Obj, margin: float = 0.08, aspect: float = 1.0) -> bool:
  """The object's centre projects inside an image of this width / height with a margin (in units of the
  image's height)."""
  col, row, depth = project(camera, np.array([[obj.x, 0.5 * obj.height, obj.z]]), aspect, 1)[0]
  return depth > 0.5 and margin < col < aspect - margin and margin < row < 1 - margin


def overlaps(a: Obj, b: Obj) -> bool:
  """True if the footprints of a and b (plus a small gap) intersect."""
  return math.hypot(a.x - b.x, a.z - b.z) < a.footprint + b.footprint + _GAP


def can_place(obj: Obj, others: Sequence[Obj], camera: Camera, wall_z: float | None,
              aspect: float = 1.0) -> bool:
  if wall_z is not None and obj.z - obj.footprint < wall_z + _GAP:
    return False
  return _in_view(camera, obj, aspect=aspect) and not any(overlaps(obj, o) for o in others)


def sample_scene(rng: np.random.Generator, min_objects: int = 3, max_objects: int = 6,
                 aspect: float = 1.0) -> Scene:
  """A random scene: camera, light, optional wall, and non-overlapping objects in view of a camera whose
  image has this width / height (the field of view is horizontal in both)."""
  camera = Camera(
      height=float(rng.uniform(1.4, 2.6)),
      pitch=math.radians(float(rng.uniform(18.0, 35.0))),
      fov=math.radians(float(rng.uniform(45.0, 62.0))),
  )
  # The light comes from the camera's side (+z), so an infinite back wall never shades the whole floor.
  azimuth = math.radians(float(rng.uniform(-75.0, 75.0)))
  elevation = math.radians(float(rng.uniform(30.0, 65.0)))
  light = Light(
      direction=(math.cos(elevation) * math.sin(azimuth), math.sin(elevation),
                 math.cos(elevation) * math.cos(azimuth)),
      intensity=float(rng.uniform(0.75, 1.0)),
      ambient=float(rng.uniform(0.18, 0.32)),
  )
  wall_z = -float(rng.uniform(7.5, 10.0)) if rng.random() < 0.5 else None
  tint = tuple(float(v) for v in rng.uniform(0.9, 1.05, size=3))
  # Ground distances seen between the bottom of the image and about 8 m.
  near = camera.height / math.tan(camera.pitch + 0.45 * camera.fov)
  num = int(rng.integers(min_objects, max_objects + 1))
  objects: list[Obj] = []
  for _ in range(200):
    if len(objects) == num:
      break
    dist = float(rng.uniform(near + 0.3, 7.5))
    half_width = dist * math.tan(0.5 * camera.fov)
    obj = Obj(
        shape=SHAPES[rng.integers(len(SHAPES))],
        color=list(COLORS)[rng.integers(len(COLORS))],
        size=list(SIZES)[rng.integers(len(SIZES))],
        material=MATERIALS[rng.integers(len(MATERIALS))],
        x=float(rng.uniform(-0.8, 0.8) * half_width),
        z=-dist,
        yaw=float(rng.uniform(0.0, 0.5 * math.pi)),
    )
    if can_place(obj, objects, camera, wall_z, aspect):
      objects.append(obj)
  return Scene(tuple(objects), camera, light, wall_z, tint)


# ----------------------------------------------------------------------------------------------------
# Ray casting. Rays: origins o (N, 3) or (1, 3), unit directions d (N, 3), float64. Each primitive
# returns (t, normal): t = inf where the ray misses (or hits behind _EPS), normal in world coordinates.


def _pick_nearest(candidates):
  """candidates: list of (t (N,), valid (N,), normal (N, 3) or (3,)) -> nearest valid (t, normal)."""
  t_best = np.where(candidates[0][1], candidates[0][0], np.inf)
  n_best = np.array(np.broadcast_to(candidates[0][2], (len(t_best), 3)))
  for t, valid, normal in candidates[1:]:
    closer = valid & (t < t_best)
    t_best = np.where(closer, t, t_best)
    n_best = np.where(closer[:, None], normal, n_best)
  return t_best, n_best


def _quadratic_roots(a, b, c):
  """Real roots (low, high) of a t^2 + b t + c = 0, NaN where there are none."""
  disc = b * b - 4 * a * c
  ok = (disc >= 0) & (np.abs(a) > 1e-12)
  sq = np.sqrt(np.where(ok, disc, 0.0))
  denom = np.where(ok, 2 * a, 1.0)
  r0, r1 = (-b - sq) / denom, (-b + sq) / denom
  return np.where(ok, np.minimum(r0, r1), np.nan), np.where(ok, np.maximum(r0, r1), np.nan)


def _unit(v):
  return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _intersect_object(obj: Obj, o, d):
  """Ray-object intersection in the object's frame (base centre at the origin, box yaw undone)."""
  p = o - np.array([obj.x, 0.0, obj.z])
  cos, sin = math.cos(obj.yaw), math.sin(obj.yaw)
  rot = np.array([[cos, 0.0, sin], [0.0, 1.0, 0.0], [-sin, 0.0, cos]])  # local -> world
  if obj.shape == "box":
    p, d = p @ rot, d @ rot  # world -> local (row vectors times rot = rot^T applied)
  p = np.broadcast_to(p, d.shape)
  px, py, pz = p[:, 0], p[:, 1], p[:, 2]
  dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
  s = obj.scale
  up = np.array([0.0, 1.0, 0.0])
  cands = []
  if obj.shape == "sphere":
    q = p - np.array([0.0, s, 0.0])
    lo, hi = _quadratic_roots(np.ones_like(dx), 2 * np.sum(q * d, -1), np.sum(q * q, -1) - s * s)
    for t in (lo, hi):
      cands.append((t, t > _EPS, (q + t[:, None] * d) / s))
  elif obj.shape == "box":
    a = 0.85 * s
    lo_corner, hi_corner = np.array([-a, 0.0, -a]), np.array([a, 2 * a, a])
    safe_d = np.where(np.abs(d) < 1e-12, 1e-12, d)
    t1, t2 = (lo_corner - p) / safe_d, (hi_corner - p) / safe_d
    t_near, t_far = np.minimum(t1, t2), np.maximum(t1, t2)
    t_enter, t_exit = t_near.max(-1), t_far.min(-1)
    hit = t_exit >= np.maximum(t_enter, _EPS)
    axis = np.argmax(t_near, axis=-1)
    normal = np.zeros_like(d)
    normal[np.arange(len(d)), axis] = -np.sign(d[np.arange(len(d)), axis])
    cands.append((t_enter, hit & (t_enter > _EPS), normal))
    cands.append((t_exit, hit, -normal))  # only rays starting inside use the exit (shadow rays)
  elif obj.shape in ("cylinder", "cone"):
    if obj.shape == "cylinder":
      r, h = 0.8 * s, 1.8 * s
      lo, hi = _quadratic_roots(dx * dx + dz * dz, 2 * (px * dx + pz * dz), px * px + pz * pz - r * r)
    else:
      r, h = s, 2 * s
      k2 = (r / h) ** 2
      y0 = h - py
      lo, hi = _quadratic_roots(dx * dx + dz * dz - k2 * dy * dy, 2 * (px * dx + pz * dz) + 2 * k2 * y0 * dy,
                                px * px + pz * pz - k2 * y0 * y0)
    for t in (lo, hi):
      hit = p + t[:, None] * d
      valid = (t > _EPS) & (hit[:, 1] >= 0) & (hit[:, 1] <= h)
      if obj.shape == "cylinder":
        normal = hit * np.array([1.0, 0.0, 1.0]) / r
      else:
        normal = _unit(np.stack([hit[:, 0], k2 * (h - hit[:, 1]), hit[:, 2]], -1))
      cands.append((t, valid, normal))
    caps = [(0.0, -up)] if obj.shape == "cone" else [(0.0, -up), (h, up)]
    for y_cap, n_cap in caps:
      t = (y_cap - py) / np.where(np.abs(dy) < 1e-12, 1e-12, dy)
      hx, hz = px + t * dx, pz + t * dz
      cands.append((t, (t > _EPS) & (hx * hx + hz * hz <= r * r), n_cap))
  else:
    raise ValueError(f"unknown shape {obj.shape!r}; expected one of {SHAPES}")
  t, normal = _pick_nearest(cands)
  if obj.shape == "box":
    normal = normal @ rot.T
  return t, normal


def _intersect_plane(o, d, axis: int, offset: float, normal):
  """The plane {x[axis] = offset}, seen from the side its normal points to."""
  o = np.broadcast_to(o, d.shape)
  da = d[:, axis]
  t = (offset - o[:, axis]) / np.where(np.abs(da) < 1e-12, 1e-12, da)
  facing = da * normal[axis] < 0
  return np.where(facing & (t > _EPS), t, np.inf), np.broadcast_to(np.asarray(normal, np.float64), d.shape)


def _bounding_sphere_hits(obj: Obj, o, d) -> np.ndarray:
  """Indices of the rays that pass through the object's bounding sphere ahead of their origin (culling)."""
  centre = np.array([obj.x, 0.5 * obj.height, obj.z])
  radius2 = obj.footprint**2 + (0.5 * obj.height) ** 2 + 1e-6
  if len(o) == 1:  # camera rays share one origin: a matrix-vector product
    q = centre - o[0]
    along, qq = d @ q, q @ q
  else:
    q = centre - o
    along, qq = np.einsum("ij,ij->i", q, d), np.einsum("ij,ij->i", q, q)
  return np.flatnonzero((qq - along**2 <= radius2) & ((along > 0) | (qq <= radius2)))


def trace(scene: Scene, o, d, *, with_ground: bool = True):
  """Nearest hit per ray: (t, world normal, surface id); surface 0 = sky, 1 = ground, 2 = wall, 3 + k = object k.

  The ground is a square of GROUND_EXTENT metres around the camera; beyond it the rays see sky.
  """
  t_best = np.full(len(d), np.inf)
  n_best = np.zeros_like(d)
  surface = np.zeros(len(d), np.int64)

  def keep(t, normal, sid, idx=slice(None)):
    closer = t < t_best[idx]
    rows = np.arange(len(d))[idx][closer]
    t_best[rows] = t[closer]
    n_best[rows] = np.broadcast_to(normal, (len(t), 3))[closer]
    surface[rows] = sid

  if with_ground:
    t, normal = _intersect_plane(o, d, 1, 0.0, (0.0, 1.0, 0.0))
    far = np.abs(np.broadcast_to(o, d.shape)[:, [0, 2]] + np.where(np.isfinite(t), t, 0.0)[:, None] * d[:, [0, 2]])
    keep(np.where(far.max(-1) <= GROUND_EXTENT, t, np.inf), normal, GROUND)
  if scene.wall_z is not None:
    keep(*_intersect_plane(o, d, 2, scene.wall_z, (0.0, 0.0, 1.0)), WALL)
  for k, obj in enumerate(scene.objects):
    idx = _bounding_sphere_hits(obj, o, d)
    if len(idx):
      t, normal = _intersect_object(obj, o if len(o) == 1 else o[idx], d[idx])
      keep(t, normal, 3 + k, idx)
  return t_best, n_best, surface


def camera_rays(camera: Camera, height: int, width: int, offset=(0.5, 0.5)):
  """Unit world directions (H*W, 3) through pixel positions (row + offset[0], column + offset[1])."""
  focal = 0.5 * width / math.tan(0.5 * camera.fov)
  rows = (np.arange(height) + offset[0] - 0.5 * height) / focal
  cols = (np.arange(width) + offset[1] - 0.5 * width) / focal
  x = np.broadcast_to(cols[None, :], (height, width))
  y = np.broadcast_to(-rows[:, None], (height, width))
  cam = np.stack([x, y, -np.ones((height, width))], -1).reshape(-1, 3)
  return _unit(cam @ camera.axes())


def _shade(scene: Scene, d, t, normal, surface):
  """Display RGB in [0, 1] per ray: Lambert + Blinn-Phong (shiny objects), hard shadows, sky gradient."""
  o = scene.camera.position
  light = np.array(scene.light.direction)
  hit = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
  base = np.zeros_like(d)
  sky_mix = np.clip(d[:, 1:2] * 2.5 + 0.3, 0.0, 1.0)
  sky = (1 - sky_mix) * np.array([0.82, 0.88, 0.95]) + sky_mix * np.array([0.42, 0.60, 0.86])
  checker = (np.floor(hit[:, 0] / 0.7) + np.floor(hit[:, 2] / 0.7)) % 2
  ground = np.where(checker[:, None] > 0, 0.66, 0.56) * np.array(scene.ground_tint)
  base = np.where((surface == GROUND)[:, None], ground, base)
  base = np.where((surface == WALL)[:, None], np.array([0.80, 0.76, 0.70]), base)
  shininess = np.zeros(len(d))
  for k, obj in enumerate(scene.objects):
    mask = surface == 3 + k
    base[mask] = COLORS[obj.color]
    shininess[mask] = 1.0 if obj.material == "shiny" else 0.0
  solid = surface > 0
  lit = np.ones(len(d), bool)
  idx = np.flatnonzero(solid)
  if len(idx):
    start = hit[idx] + _SHADOW_OFFSET * normal[idx]
    t_shadow, _, _ = trace(scene, start, np.broadcast_to(light, (len(idx), 3)), with_ground=False)
    lit[idx] = ~np.isfinite(t_shadow)
  n_dot_l = np.clip(normal @ light, 0.0, None) * lit
  half = _unit(light - d)
  spec = np.clip(np.sum(normal * half, -1), 0.0, None) ** 40 * lit * shininess * 0.7
  intensity = scene.light.intensity
  rgb = base * (scene.light.ambient + intensity * n_dot_l)[:, None] + (intensity * spec)[:, None]
  rgb = np.where(solid[:, None], rgb, sky)
  return np.clip(rgb, 0.0, 1.0)


def render_rgb(scene: Scene, height: int, width: int, supersample: int = 2) -> np.ndarray:
  """The uint8 (H, W, 3) image, averaged over supersample^2 sub-pixel rays (one batched trace)."""
  offsets = [((sy + 0.5) / supersample, (sx + 0.5) / supersample)
             for sy, sx in itertools.product(range(supersample), repeat=2)]
  d = np.concatenate([camera_rays(scene.camera, height, width, off) for off in offsets])
  rgb = _shade(scene, d, *trace(scene, scene.camera.position[None], d))
  rgb = rgb.reshape(len(offsets), height * width, 3).mean(0)
  return np.round(rgb * 255.0).astype(np.uint8).reshape(height, width, 3)


def render(scene: Scene, height: int, width: int | None = None, supersample: int = 2) -> dict[str, np.ndarray]:
  """Image and exact per-pixel ground truth (labels from the ray through each pixel's centre)."""
  width = height if width is None else width
  if height < 1 or width < 1 or supersample < 1:
    raise ValueError(f"height, width and supersample must be >= 1, got {height}, {width}, {supersample}")
  camera = scene.camera
  d = camera_rays(camera, height, width)
  t, normal, surface = trace(scene, camera.position[None], d)
  hit = np.isfinite(t)
  axes = camera.axes()
  depth = np.where(hit, np.where(hit, t, 0.0) * (d @ -axes[2]), 0.0)
  normals_cam = np.where(hit[:, None], normal @ axes.T, 0.0)
  classes = np.array([BACKGROUND, GROUND, WALL] + [SHAPE_CLASS[o.shape] for o in scene.objects], np.int32)
  semantic = classes[surface]
  instance = np.where(surface >= 3, surface - 2, 0).astype(np.int32)
  if supersample == 1:
    rgb = np.round(_shade(scene, d, t, normal, surface) * 255.0).astype(np.uint8).reshape(height, width, 3)
  else:
    rgb = render_rgb(scene, height, width, supersample)
  return {
      "image": rgb,
      "depth": depth.astype(np.float32).reshape(height, width),
      "normals": normals_cam.astype(np.float32).reshape(height, width, 3),
      "semantic": semantic.reshape(height, width),
      "instance": instance.reshape(height, width),
  }


# ----------------------------------------------------------------------------------------------------
# Language: descriptions, captions, referring expressions, edits. Image-space facts (what is visible,
# where its pixels are) come from the rendered masks, so the text agrees with the picture.


@dataclasses.dataclass(frozen=True)
class View:
  """Where an object shows in the image: visible pixel count, mean column (0..1) and mean z-depth."""
  pixels: int
  column: float
  depth: float


def object_views(gt: dict[str, np.ndarray], num_objects: int) -> list[View]:
  instance, depth = gt["instance"], gt["depth"]
  width = instance.shape[1]
  cols = np.broadcast_to(np.arange(instance.shape[1])[None], instance.shape)
  views = []
  for k in range(num_objects):
    mask = instance == k + 1
    n = int(mask.sum())
    views.append(View(n, float((cols[mask].mean() + 0.5) / width) if n else float("nan"),
                      float(depth[mask].mean()) if n else float("nan")))
  return views


def _article(phrase: str) -> str:
  return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def describe(obj: Obj, attrs: Sequence[str]) -> str:
  """The noun phrase naming `attrs` (a subset of size, material, color) and the shape, in English order."""
  words = [getattr(obj, a) for a in ("size", "material", "color") if a in attrs]
  return " ".join(words + [obj.shape])


def matches(obj: Obj, attrs: dict[str, str]) -> bool:
  return all(getattr(obj, k) == v for k, v in attrs.items())


# Attribute sets tried for a unique description, shortest first.
_ATTR_SETS = ((), ("color",), ("size",), ("material",), ("size", "color"), ("color", "material"),
              ("size", "material"), ("size", "color", "material"))


def unique_descriptions(objects: Sequence[Obj], k: int) -> list[tuple[str, ...]]:
  """Attribute sets (besides the shape) that single out object k among all the scene's objects."""
  target = objects[k]
  out = []
  for attrs in _ATTR_SETS:
    query = {a: getattr(target, a) for a in attrs + ("shape",)}
    if sum(matches(o, query) for o in objects) == 1:
      out.append(attrs)
  return out


_COLUMN_MARGIN = 0.06  # image widths: left/right relations need at least this much separation
_DEPTH_MARGIN = 0.6    # metres: in front of / behind need at least this much separation
RELATIONS = {  # name -> (clearly true, clearly false) on two views (a relative to b)
    "left of": (lambda a, b: a.column < b.column - _COLUMN_MARGIN, lambda a, b: a.column > b.column),
    "right of": (lambda a, b: a.column > b.column + _COLUMN_MARGIN, lambda a, b: a.column < b.column),
    "in front of": (lambda a, b: a.depth < b.depth - _DEPTH_MARGIN, lambda a, b: a.depth > b.depth),
    "behind": (lambda a, b: a.depth > b.depth + _DEPTH_MARGIN, lambda a, b: a.depth < b.depth),
}
EXTREMES = {  # word -> (key, sign, margin): the object whose key is clearly the smallest (sign 1) or largest
    "leftmost": ("column", 1, _COLUMN_MARGIN),
    "rightmost": ("column", -1, _COLUMN_MARGIN),
    "nearest": ("depth", 1, _DEPTH_MARGIN),
    "farthest": ("depth", -1, _DEPTH_MARGIN),
}


def referring_expressions(objects: Sequence[Obj], views: Sequence[View], max_per_object: int = 3
                          ) -> list[tuple[str, int]]:
  """(expression, instance id) pairs that each pick out exactly one visible object.

  Three kinds: attributes ("the small red sphere", unique among all objects, hidden ones included),
  extremes among the visible objects of a shape ("the leftmost cone"), and a relation to an object with
  a unique description ("the box left of the green sphere"), where every other visible object of that
  shape must clearly fail the relation.
  """
  visible = [k for k, v in enumerate(views) if v.pixels >= _MIN_VISIBLE_PIXELS]
  out = []
  for k in visible:
    obj, found = objects[k], []
    for attrs in unique_descriptions(objects, k)[:2]:
      found.append(f"the {describe(obj, attrs)}")
    same = [j for j in visible if objects[j].shape == obj.shape]
    hidden_same = any(o.shape == obj.shape and j not in visible for j, o in enumerate(objects))
    if len(same) >= 2 and not hidden_same:
      for word, (key, sign, margin) in EXTREMES.items():
        mine = sign * getattr(views[k], key)
        if all(mine < sign * getattr(views[j], key) - margin for j in same if j != k):
          found.append(f"the {word} {obj.shape}")
    for a in visible:
      if a == k or not unique_descriptions(objects, a):
        continue
      anchor = f"the {describe(objects[a], unique_descriptions(objects, a)[0])}"
      others = [j for j in range(len(objects)) if j not in (k, a) and objects[j].shape == obj.shape]
      if any(j not in visible for j in others):
        continue  # a hidden object of the same shape could be the one meant
      for rel, (true, false) in RELATIONS.items():
        if true(views[k], views[a]) and all(false(views[j], views[a]) for j in others):
          found.append(f"the {obj.shape} {rel} {anchor}")
          break
    out += [(e, k + 1) for e in found[:max_per_object]]
  return out


def caption(objects: Sequence[Obj], views: Sequence[View], wall: bool, rng: np.random.Generator) -> str:
  """One of several phrasings naming the visible objects, with an image-space relation when there is one."""
  visible = sorted((k for k, v in enumerate(views) if v.pixels >= _MIN_VISIBLE_PIXELS),
                   key=lambda k: views[k].column)
  place = "in a room" if wall else "on a checkered floor"
  if not visible:
    return f"an empty scene: nothing {place}"

  def phrase(k):
    obj = objects[k]
    attrs = ["size", "color"] + (["material"] if obj.material == "shiny" or rng.random() < 0.3 else [])
    return _article(describe(obj, attrs))

  def listing(ks):
    names = [phrase(k) for k in ks]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]

  pairs = [(a, b, rel) for a, b in itertools.permutations(visible, 2) for rel, (true, _) in RELATIONS.items()
           if true(views[a], views[b])]
  style = int(rng.integers(4))
  if style == 0 and pairs:
    a, b, rel = pairs[rng.integers(len(pairs))]
    rest = [k for k in visible if k not in (a, b)]
    text = f"{phrase(a)} {rel} {phrase(b)}"
    return text + (f", with {listing(rest)}" if rest else "")
  if style == 1:
    return f"from left to right: {listing(visible)}"
  if style == 2:
    count = "one object" if len(visible) == 1 else f"{len(visible)} objects"
    return f"{count} {place}: {listing(visible)}"
  return f"a rendered scene with {listing(visible)}"


@dataclasses.dataclass(frozen=True)
class Edit:
  kind: str  # "color", "move", "remove" or "none"
  instruction: str
  instance: int  # the edited object's instance id in the source scene (0 for "none")
  scene: Scene


_COLOR_TEMPLATES = ("make the {obj} {color}", "change the color of the {obj} to {color}",
                    "paint the {obj} {color}", "turn the {obj} {color}")
_REMOVE_TEMPLATES = ("remove the {obj}", "delete the {obj}", "take away the {obj}", "erase the {obj}")
_MOVE_TEMPLATES = ("move the {obj} to the {side}", "shift the {obj} to the {side}",
                   "slide the {obj} to the {side}")


def sample_edit(scene: Scene, views: Sequence[View], rng: np.random.Generator, aspect: float = 1.0) -> Edit:
  """One edit of a visible, uniquely describable object: recolour, move left/right, or remove."""
  objects = scene.objects
  cands = [k for k, v in enumerate(views) if v.pixels >= _MIN_VISIBLE_PIXELS and unique_descriptions(objects, k)]
  if not cands:
    return Edit("none", "", 0, scene)
  k = cands[rng.integers(len(cands))]
  obj = objects[k]
  name = describe(obj, unique_descriptions(objects, k)[0])
  kinds = ["color", "remove", "move"]
  rng.shuffle(kinds)
  for kind in kinds:
    if kind == "color":
      color = [c for c in COLORS if c != obj.color][rng.integers(len(COLORS) - 1)]
      new = objects[:k] + (dataclasses.replace(obj, color=color),) + objects[k + 1:]
      text = _COLOR_TEMPLATES[rng.integers(len(_COLOR_TEMPLATES))].format(obj=name, color=color)
      return Edit(kind, text, k + 1, dataclasses.replace(scene, objects=new))
    if kind == "remove":
      text = _REMOVE_TEMPLATES[rng.integers(len(_REMOVE_TEMPLATES))].format(obj=name)
      return Edit(kind, text, k + 1, dataclasses.replace(scene, objects=objects[:k] + objects[k + 1:]))
    for side in rng.permutation(["left", "right"]):
      others = objects[:k] + objects[k + 1:]
      for shift in (1.5, 1.0, 0.7):
        moved = dataclasses.replace(obj, x=obj.x + (shift if side == "right" else -shift) * abs(obj.z) / 4)
        if can_place(moved, others, scene.camera, scene.wall_z, aspect):
          text = _MOVE_TEMPLATES[rng.integers(len(_MOVE_TEMPLATES))].format(obj=name, side=side)
          new = objects[:k] + (moved,) + objects[k + 1:]
          return Edit("move", text, k + 1, dataclasses.replace(scene, objects=new))
  raise AssertionError("unreachable: recolour and remove always apply")


# ----------------------------------------------------------------------------------------------------
# The raw sample.


def object_records(objects: Sequence[Obj], views: Sequence[View]) -> list[dict]:
  return [{"instance": k + 1, "shape": o.shape, "color": o.color, "size": o.size, "material": o.material,
           "position": [round(o.x, 4), 0.0, round(o.z, 4)], "yaw": round(o.yaw, 4), "pixels": v.pixels}
          for k, (o, v) in enumerate(zip(objects, views))]


def make_sample(split: str, index: int, resolution: int, *, seed: int = 0, supersample: int = 2,
                shape: tuple[int, int] | None = None) -> dict:
  """Record `index` of `split` as a raw sample (docs/interfaces.md), at resolution x resolution pixels, or
  at `shape` = (H, W) pixels: a non-square camera (horizontal field of view, objects placed in its view).

  The scene depends only on (seed, split, index) and the aspect ratio, not on the resolution; the text does
  too, except that objects with fewer than a few visible pixels are left out of it, which depends on the
  resolution.
  """
  height, width = (resolution, resolution) if shape is None else (int(shape[0]), int(shape[1]))
  scene = sample_scene(scene_rng(split, index, seed, stream=0), aspect=width / height)
  text_rng = scene_rng(split, index, seed, stream=1)
  gt = render(scene, height, width, supersample)
  views = object_views(gt, len(scene.objects))
  edit = sample_edit(scene, views, text_rng, width / height)
  target = gt["image"] if edit.kind == "none" else render_rgb(edit.scene, height, width, supersample)
  present = np.unique(gt["instance"])
  return {
      **gt,
      "class_names": CLASS_NAMES,
      "instance_class": {int(i): SHAPE_CLASS[scene.objects[i - 1].shape] for i in present if i > 0},
      "caption": caption(scene.objects, views, scene.wall_z is not None, text_rng),
      "referring": referring_expressions(scene.objects, views),
      "edit_instruction": edit.instruction,
      "edit_source": gt["image"],
      "edit_target": target,
      "objects": object_records(scene.objects, views),
      "key": f"scenes/{split}/{index}",
  }


def scene_for(split: str, index: int, seed: int = 0) -> Scene:
  """The scene behind record `index` of `split` (for tests and pictures)."""
  return sample_scene(scene_rng(split, index, seed, stream=0))
