/**
 * What the image builder, volantd and the guest's stage-1 agree on about the shared runtime image
 * (docs/runtime-image.md, docs/CONTRACTS.md): how it is attached and how the guest is told.
 */

/** The kernel parameter naming the device the runtime image is attached as. */
export const RUNTIME_PARAM = 'volant.runtime';
/** `pmem`: virtio-pmem, mounted with DAX; `blk`: a read-only virtio-blk disk. */
export type RuntimeDevice = 'pmem' | 'blk';
export const RUNTIME_DEVICES: readonly RuntimeDevice[] = ['pmem', 'blk'];
/** virtio-pmem regions must be 2 MiB aligned (the guest's nd_pmem, Cloud Hypervisor's PmemSizeNotAligned). */
export const RUNTIME_ALIGN_BYTES = 2 * 1024 * 1024;
/** Runtime images are `<hash>.erofs`. */
export const RUNTIME_SUFFIX = '.erofs';
