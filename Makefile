# image2sdr developer commands.  Every target installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
XVENV := .venv-export
MVENV := .venv-milvus
PY := $(VENV)/bin/python
MODELS := models

.PHONY: setup models milvus-server chromium toolchains clients serve test test-fast bench bench-quality bench-visual bench-index bench-service bench-hostile bench-dupes bench-filters bench-concepts bench-explain bench-map bench-meaning bench-page bench-replicas lint clean proto proto-check stubs node-client example-htm conformance

## setup: the serving virtualenv (no torch in it)
setup: $(VENV)/.installed
$(VENV)/.installed: server/pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e 'client[cli]' -e 'server[dev]'
	touch $@

## milvus-server: a standalone Milvus server (PyPI's milvus 2.3.5) in a venv of its own, for the tests and benchmarks
milvus-server: $(MVENV)/.installed
$(MVENV)/.installed:
	$(PYTHON) -m venv $(MVENV)
	$(MVENV)/bin/python -m pip install -q "milvus==2.3.5"
	touch $@

## models: export the embedded models to ONNX once, in a separate venv with torch
models: $(MODELS)/manifest.json
$(MODELS)/manifest.json: server/tools/export_models.py server/tools/quantize_classifier.py requirements-export.txt
	$(PYTHON) -m venv $(XVENV)
	$(XVENV)/bin/python -m pip install -q -r requirements-export.txt
	$(XVENV)/bin/python -W ignore server/tools/export_models.py $(MODELS)

## chromium: Debian's Chromium for the page's browser test (Playwright drives it; it downloads no browser of its own)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
chromium:
	test -x /usr/bin/chromium || ($(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

## serve: the service on localhost:50051 with the embedded defaults (CONFIG=file.yml to change them)
CONFIG ?=
serve: setup models
	$(VENV)/bin/image2sdr serve $(if $(CONFIG),--config $(CONFIG))

## test: the whole suite, real models, real files (and the Go, Java and Node clients against a real server)
test: setup models milvus-server chromium clients $(VENV)/.example-installed
	$(PY) -m pytest -n 2 --dist loadgroup --durations=20

## test-fast: the quick tier (about a minute): the tests that need neither the exported models nor the Milvus
## server (tests/conftest.py marks the others), without `make models`
test-fast: setup
	$(PY) -m pytest -n 2 --dist loadgroup --durations=10 -m "not models and not milvus_server"

## bench: encoder throughput, cold term SDRs, stage shares, merges/s vs the 2018 algorithm
bench: setup models
	$(PY) benchmarks/bench_encoder.py

## bench-quality: term-SDR similarity vs human ratings (WordSim-353, SimLex-999)
bench-quality: setup models
	$(PY) benchmarks/bench_quality.py

## bench-visual: visual SDR overlap vs the classifier's feature cosine (Spearman rho), recall@1 of altered
## copies among distractors, the projection candidates side by side, pHash distances (real photos from Debian packages)
bench-visual: setup models
	$(PY) benchmarks/bench_visual.py

## bench-index: the SDR index on 1M synthetic SDRs; BACKEND=milvus: a real Milvus server beside FAISS at 100k and 1M
BACKEND ?= faiss
bench-index: setup $(if $(filter milvus,$(BACKEND)),milvus-server)
	@case "$(BACKEND)" in faiss|milvus) ;; *) echo "BACKEND must be faiss or milvus, not '$(BACKEND)'"; exit 2;; esac
	$(PY) benchmarks/$(if $(filter milvus,$(BACKEND)),bench_milvus.py,bench_index.py)

## bench-service: EncodeStream vs the in-process encoder, Encode p50, FindSimilar p50 at 100k items
bench-service: setup models
	$(PY) benchmarks/bench_service.py

## bench-hostile: what hostile requests cost a real server and another client meanwhile (images, memory, work, slots, web;
##   SECTIONS=memory,cost picks some)
bench-hostile: setup models
	$(PY) benchmarks/bench_hostile.py $(if $(SECTIONS),--only $(SECTIONS))

## bench-dupes: altered copies of real photos found again through a real server (semantic, visual, pHash, dense,
## FindDuplicates), false duplicates, the threshold sweep; fetches the photo packages on first use (apt-get download)
bench-dupes: setup models
	$(PY) benchmarks/bench_dupes.py

## bench-concepts: custom concepts taught by 5 and 10 example drawings (openclipart, fetched on first use), precision
## and recall on held-out images beside a nearest-centroid baseline on the pooled feature; the scoring cost per Encode;
## PHOTOS=1: on the 228 labelled photos instead (10 + 10 examples, two rounds of refinement from the suggestions)
bench-concepts: setup models
	$(PY) benchmarks/bench_concepts.py $(if $(PHOTOS),--photos)

## bench-filters: filtered search (50 %, 5 %, 0.1 % passing) and search by tag at 1M synthetic items, exact and IVF,
## with the strategy each chose and the crossovers behind it; N=50000 for a quick look
bench-filters: setup
	$(PY) benchmarks/bench_filters.py $(if $(N),--n $(N))

## bench-meaning: 228 labelled real photos (tuxpaint-stamps-default, fetched on first use) through a real server:
## neighbours' same-kind precision@10 beside the pooled feature's, class-name and synonym text queries' recall@10 and MRR
## by SDR overlap alone (before) and with stored concept names (after)
bench-meaning: setup models
	$(PY) benchmarks/bench_meaning.py

## bench-page: the web face in Chromium: bytes per 100 items listed (BASIC and FULL views, 100 real photos), the
## map's and the copies view's first paint (ITEMS=1000 COPIES=50 synthetic items)
bench-page: setup models chromium
	$(PY) benchmarks/bench_listing.py
	$(PY) benchmarks/bench_page.py $(or $(ITEMS),1000) $(or $(COPIES),50)

## bench-replicas: two replicas on one Milvus 2.3.5 collection: read-after-write per consistency level on the writer
## and the other replica, SKIP raced through both, outages (time to SERVING, log lines)
bench-replicas: setup models milvus-server
	$(PY) benchmarks/bench_milvus_replicas.py

## bench-explain: Explain's time per explanation at the default patch and stride (scikit-image photos), and the
## score's fall with the hottest square hidden against a random square of the same size
bench-explain: setup models
	$(PY) benchmarks/bench_explain.py

## bench-map: CreateMap -> DONE through a real server for 1024 and 4096 stored items (photos and openclipart drawings,
## encoded once), neighbourhood preservation (map, 2-D embedding, random), and the layout's choices measured: openTSNE
## against UMAP, lapjv's assignment against SciPy's and lap's (UMAP and lap: the `bench` extra); writes docs/images/map-1024.jpg
bench-map: setup models $(VENV)/.bench-installed
	$(PY) benchmarks/bench_map.py
$(VENV)/.bench-installed: server/pyproject.toml
	$(PY) -m pip install -q -e 'server[bench]'
	touch $@

## example-htm: the HTM example end to end (its requirements.txt: brainblocks, built once, PyAV, matplotlib); prints
## frames/s from video file to anomaly score, each stage's share, spliced vs learned scores; writes docs/images/htm-anomaly.png
example-htm: setup models $(VENV)/.example-installed
	$(PY) examples/htm_anomaly/htm_anomaly.py --png docs/images/htm-anomaly.png
$(VENV)/.example-installed: examples/htm_anomaly/requirements.txt
	$(PY) -m pip install -q -r examples/htm_anomaly/requirements.txt
	touch $@

## conformance: the same cases through the Python, Node, Go and Java clients against one real server, timed
conformance: setup models clients
	$(PY) -m pytest tests/test_conformance.py -p no:cacheprovider -v --durations=0

lint: setup
	$(PY) -m ruff check server tests benchmarks examples client/image2sdr/client
	$(PY) -m ruff format --check server tests benchmarks examples client/image2sdr/client
	$(PY) -m mypy

clean:
	rm -rf $(VENV) $(XVENV) $(MODELS)

# -- client side: stubs and the Node client ---------------------------------------
PROTO := protos/image2sdr/v1/image2sdr.proto
# The google/rpc/*.proto files that googleapis-common-protos ships next to its modules.
GOOGLEAPIS = $$($(PY) -c 'import pathlib, google.rpc.status_pb2 as m; print(pathlib.Path(m.__file__).parents[2])')
# google/protobuf/*.proto as grpcio-tools ships them.
WELL_KNOWN = $$($(PY) -c 'import pathlib, grpc_tools; print(pathlib.Path(grpc_tools.__file__).parent / "_proto")')
GEN := gen
APT ?= apt-get
NPM ?= npm

## proto: regenerate the committed Python stubs in client/image2sdr/v1 (grpcio-tools pinned by server[dev])
proto: setup
	$(PY) -m grpc_tools.protoc -I protos -I $(GOOGLEAPIS) --python_out=client --grpc_python_out=client --pyi_out=client $(PROTO)

## proto-check: fail when the committed stubs are not what `make proto` makes of the contract
proto-check: proto
	git diff --exit-code -- client/image2sdr/v1

## toolchains: Debian's Go and Java gRPC toolchains and libraries for the Go and Java clients (apt, as `make chromium`)
# package:a file it installs (installed when the file is missing).  GOPATH mode: Debian ships the Go
# libraries as source under /usr/share/gocode, and no module proxy is reachable.
TOOLCHAIN := protobuf-compiler:/usr/bin/protoc \
	golang-go:/usr/bin/go protoc-gen-go:/usr/bin/protoc-gen-go protoc-gen-go-grpc:/usr/bin/protoc-gen-go-grpc \
	golang-google-grpc-dev:/usr/share/gocode/src/google.golang.org/grpc \
	golang-google-protobuf-dev:/usr/share/gocode/src/google.golang.org/protobuf \
	golang-github-golang-protobuf-1-5-dev:/usr/share/gocode/src/github.com/golang/protobuf/internal/gengogrpc \
	golang-google-genproto-dev:/usr/share/gocode/src/google.golang.org/genproto/googleapis/rpc/errdetails \
	openjdk-17-jdk-headless:/usr/lib/jvm/java-17-openjdk-amd64/bin/javac \
	protobuf-compiler-grpc-java-plugin:/usr/bin/grpc_java_plugin libgrpc-java:/usr/share/java/grpc-netty.jar \
	libprotobuf-java:/usr/share/java/protobuf.jar libgoogle-common-protos-java:/usr/share/java/proto-google-common-protos.jar \
	libnetty-java:/usr/share/java/netty-codec-http2.jar libperfmark-java:/usr/share/java/perfmark-api.jar \
	libgoogle-gson-java:/usr/share/java/gson.jar libguava-java:/usr/share/java/guava.jar \
	libgeronimo-annotation-1.3-spec-java:/usr/share/java/geronimo-annotation-1.3-spec.jar
toolchains:
	@missing=; for pair in $(TOOLCHAIN); do test -e $${pair#*:} || missing="$$missing $${pair%%:*}"; done; \
	if [ -n "$$missing" ]; then echo "installing$$missing"; \
		$(SUDO) $(APT) update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq $$missing >/dev/null; fi

## stubs: Node (TypeScript types for grpc-js), Go and Java stubs in gen/ (not committed), made again when the proto changes
# Go and Java use Debian's protoc and plugins (grpcio-tools' protoc has no Java generator);
# the well-known types come from grpcio-tools, google/rpc from googleapis-common-protos.
stubs: $(GEN)/.stubs
$(GEN)/.stubs: $(PROTO) $(VENV)/.installed client/node/node_modules/.installed | toolchains
	rm -rf $(GEN)/node $(GEN)/go $(GEN)/java && mkdir -p $(GEN)/node $(GEN)/go $(GEN)/java
	cd client/node && npx proto-loader-gen-types --grpcLib=@grpc/grpc-js --keepCase --longs=String --enums=String \
		--defaults --oneofs --includeDirs=../../protos --includeDirs=protos --outDir=../../$(GEN)/node image2sdr/v1/image2sdr.proto
	protoc -I protos -I $(GOOGLEAPIS) -I $(WELL_KNOWN) \
		--go_out=$(GEN)/go --go_opt=paths=source_relative \
		--go-grpc_out=$(GEN)/go --go-grpc_opt=paths=source_relative \
		--plugin=protoc-gen-grpc-java=$$(command -v grpc_java_plugin) --java_out=$(GEN)/java --grpc-java_out=$(GEN)/java \
		$(PROTO)
	touch $@

## clients: the Go and Java clients compiled once (gen/bin/image2sdr-conformance{,-java}) and the Node client's dependencies
clients: $(GEN)/bin/image2sdr-conformance $(GEN)/bin/image2sdr-conformance-java node-client

# The Go client in GOPATH mode: gen/gopath/src/github.com/image2sdr/image2sdr/{gen/go,client/go} link to the
# stubs and client/go (the proto's go_package), Debian's libraries come from /usr/share/gocode.
GO_PATH := $(GEN)/gopath
GO_ROOT_PKG := github.com/image2sdr/image2sdr
GO_ENV := GO111MODULE=off GOPATH=$(CURDIR)/$(GO_PATH):/usr/share/gocode
GO_PACKAGES := $(GO_ROOT_PKG)/client/go/image2sdr $(GO_ROOT_PKG)/client/go/cmd/image2sdr-conformance
$(GEN)/bin/image2sdr-conformance: $(GEN)/.stubs $(wildcard client/go/*/*.go client/go/cmd/*/*.go)
	mkdir -p $(GO_PATH)/src/$(GO_ROOT_PKG)/gen $(GO_PATH)/src/$(GO_ROOT_PKG)/client $(GEN)/bin
	ln -sfn $(CURDIR)/$(GEN)/go $(GO_PATH)/src/$(GO_ROOT_PKG)/gen/go
	ln -sfn $(CURDIR)/client/go $(GO_PATH)/src/$(GO_ROOT_PKG)/client/go
	@test -z "$$(gofmt -l client/go)" || (echo "gofmt would change: $$(gofmt -l client/go)"; exit 1)
	$(GO_ENV) go vet $(GO_PACKAGES)
	$(GO_ENV) go build -o $@ $(GO_ROOT_PKG)/client/go/cmd/image2sdr-conformance

# The Java client against Debian's jars; the launcher script carries the classpath.
JAVA_JARS := grpc-api grpc-core grpc-netty grpc-protobuf grpc-protobuf-lite grpc-stub grpc-context protobuf \
	proto-google-common-protos guava perfmark-api gson geronimo-annotation-1.3-spec netty-buffer netty-codec \
	netty-codec-http netty-codec-http2 netty-common netty-handler netty-resolver netty-transport \
	netty-transport-native-unix-common
JAVA_CLASSPATH := $(subst $(eval) ,:,$(foreach jar,$(JAVA_JARS),/usr/share/java/$(jar).jar))
JAVA_CLASSES := $(GEN)/java-classes
$(GEN)/bin/image2sdr-conformance-java: $(GEN)/.stubs $(shell find client/java -name '*.java' 2>/dev/null)
	rm -rf $(JAVA_CLASSES) && mkdir -p $(JAVA_CLASSES) $(GEN)/bin
	javac -nowarn -encoding UTF-8 -d $(JAVA_CLASSES) -cp $(JAVA_CLASSPATH) $$(find $(GEN)/java client/java -name '*.java')
	printf '#!/bin/sh\nexec java -cp "%s:%s" io.image2sdr.client.Conformance "$$@"\n' "$(CURDIR)/$(JAVA_CLASSES)" "$(JAVA_CLASSPATH)" > $@
	chmod +x $@

## node-client: install the Node client's dependencies (client/node/package-lock.json)
node-client: client/node/node_modules/.installed
client/node/node_modules/.installed: client/node/package.json client/node/package-lock.json
	cd client/node && $(NPM) ci --no-audit --no-fund
	touch $@
