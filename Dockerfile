# syntax=docker/dockerfile:1
#
# Production image for exchanger: two stages on the same official base.
#   build   — builds the project's wheel and installs it into a venv at /opt/exchanger
#   runtime — the same base plus that venv only: no source tree, no pip, no compilers
#
# Build:  docker build -t exchanger:0.1.0 .   (--build-arg EXTRAS=kms for an App key in AWS KMS)
# Run:    see charts/exchanger/README.md ("Run the container").
#
# The base is pinned by tag (Python 3.12 on Debian 12, slim variant). For
# reproducible builds pin it by digest as well, e.g.
#   --build-arg PYTHON_IMAGE=python:3.12-slim-bookworm@sha256:<digest>
# Both stages must use the same image: the venv's python is a symlink to it.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Optional App-key signers, e.g. --build-arg EXTRAS=kms (AWS KMS) or kms,pkcs11.
ARG EXTRAS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exchanger ./exchanger
# Every dependency ships binary wheels for linux/amd64 and arm64, so no
# compiler is needed even here. The venv's own pip goes away at the end: the
# runtime stage copies this venv as it is.
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/exchanger \
 && wheel="$(echo /wheels/exchanger-*.whl)" \
 && /opt/exchanger/bin/pip install --no-cache-dir "${wheel}${EXTRAS:+[${EXTRAS}]}" \
 && /opt/exchanger/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
# Keep VERSION equal to exchanger.__version__ (scripts/check-deploy.sh checks).
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="exchanger" \
      org.opencontainers.image.description="OIDC token-exchange gateway: verified workload identity in, scoped GitHub credential or secret out." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
ENV PATH=/opt/exchanger/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The base image's own pip is not needed at run time either.
RUN python -m pip uninstall --yes pip
COPY --from=build /opt/exchanger /opt/exchanger
# A numeric user with no entry in /etc/passwd: nothing in the image runs as root.
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/opt/exchanger/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8080') + '/healthz', timeout=3)"]
ENTRYPOINT ["exchanger"]
CMD ["serve", "--config", "/etc/exchanger/exchanger.yaml"]
