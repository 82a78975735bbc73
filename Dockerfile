# weightlift as a container image: `docker build -t weightlift .`, then
# `docker run --rm -v "$PWD/models:/models" -e AXOM_KEY weightlift pull axom://models/<id> -o /models/x`
# (README: "Containers and Kubernetes" has an init-container example).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api ./api
COPY downloader ./downloader
COPY verify ./verify
COPY cli ./cli
COPY emulator ./emulator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# Not root: the shared volume (an emptyDir) is writable by any user.
USER 65532:65532
WORKDIR /models
ENV WEIGHTLIFT_OUTPUT_ROOT=/models
ENTRYPOINT ["weightlift"]
CMD ["--help"]
