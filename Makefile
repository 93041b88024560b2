# A thin layer over CMake: `make run` and `make test` are the README's two commands.
BUILD ?= build
BUILD_TYPE ?= Release
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc)
PREFIX ?= /usr/local

# Debian packages: to build and run / to run the tests / to regenerate fixtures and benchmark.
PACKAGES = build-essential cmake pkg-config lua5.4 liblua5.4-dev libopenblas-openmp-dev libhdf5-dev \
           libpng-dev zlib1g-dev libreadline-dev libcjson-dev libonig-dev libutf8proc-dev libopenmpi-dev openmpi-bin \
           libdnnl-dev lua-argparse dataset-fashion-mnist fortunes
TEST_PACKAGES = lua-busted tmux python3-h5py luarocks
DEV_PACKAGES = python3-torch python3-h5py hdf5-tools nodejs

.PHONY: all build run test deps test-deps dev-deps sanitize install clean

all: build

deps:
	@sh tests/install_packages.sh $(PACKAGES)

test-deps:
	@sh tests/install_packages.sh $(PACKAGES) $(TEST_PACKAGES)

dev-deps:
	@sh tests/install_packages.sh $(PACKAGES) $(TEST_PACKAGES) $(DEV_PACKAGES)
	@command -v npm >/dev/null || sh tests/install_packages.sh npm   # nodesource's nodejs ships its own
	cd tests/gen/node && npm ci --no-audit --no-fund   # the JavaScript references of tests/gen/node

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS)

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# The main job: fine-tune the shipped ResNet-S on four unseen classes, 50 labels each.
run: deps build
	$(BUILD)/ftlua scripts/finetune_vision.lua

# Every test, through ctest.
test: test-deps build
	cd $(BUILD) && ctest --output-on-failure -j 2

# The library, ftlua, the checkpoints and the recipes under $(PREFIX) (bin/, lib/lua/5.4,
# share/lua/5.4, share/ftlua/{models,scripts}); nothing installed refers back to this checkout.
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer.
sanitize: test-deps
	$(MAKE) test BUILD=build-sanitize BUILD_TYPE=Debug CMAKE_FLAGS=-DFT_SANITIZE=ON

clean:
	rm -rf $(BUILD) build-sanitize
