/** The version of vind itself, stamped on every object it creates (dev.vind.version). */
export const VIND_VERSION = '0.1.0';
