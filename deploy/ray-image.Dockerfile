# The image deploy/ray-cluster.yaml runs on the head and on every GPU worker: Ray's CUDA image (its Ray
# must be the one workbench pins) plus workbench with the diffusers and ray extras. NOT BUILT HERE (no
# Docker on the machine this was written on); check that the base tag exists for your Ray version.
#   docker build -f deploy/ray-image.Dockerfile -t registry.example.com/workbench-ray:2.60.0-gpu .
FROM rayproject/ray:2.60.0-py311-gpu
# What the wheel is built from (pyproject.toml: the package and the template library), not the checkout's
# .venv or stores.
COPY --chown=ray:users pyproject.toml README.md /home/ray/workbench/
COPY --chown=ray:users workbench /home/ray/workbench/workbench
COPY --chown=ray:users templates /home/ray/workbench/templates
# torch's PyPI wheels for Linux x86_64 bundle their CUDA libraries.
RUN pip install --no-cache-dir "/home/ray/workbench[diffusers,ray]"
