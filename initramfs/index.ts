/**
 * The image builder's public surface: what volantd and volar use to fetch the guest kernel and
 * to build plugin images. Everything else in initramfs/ is an implementation part.
 */

export { BUILD_FILE_NAME, BuildFile, type Compression, parseBuildFile } from './build-file.js';
export { type BuildItem, type BuildOptions, type BuildResult, buildPlugin, IMAGE_FILE_NAME, imageMinMemoryMb, type Layout, MANIFEST_FILE_NAME } from './build.js';
export { loadBuildFile, loadManifest } from './plugin-input.js';
export { defaultCacheDir } from './cache.js';
export { type CpioEntry, sourceDateEpoch, writeCpio } from './cpio.js';
export { cachedKernel, type FetchKernelOptions, fetchKernel, type KernelInfo } from './kernel.js';
export { DEFAULT_MODULES, resolveModules } from './modules.js';
export { ensureRuntimeImage, RUNTIME_FORMAT_VERSION, type RuntimeImage, type RuntimeImageOptions, runtimeImagePath } from './runtime-image.js';
export { LAYOUTS } from './stage.js';
export { RUNTIME_DEVICES, RUNTIME_PARAM, type RuntimeDevice } from '../shared/runtime-image.js';
