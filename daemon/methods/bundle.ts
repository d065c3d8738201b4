import type { Handlers } from '../server/rpc-server.js';
import { BundleService } from '../services/bundles.js';
import type { ServiceContext } from '../services/context.js';
import type { WindowService } from '../services/windows.js';

/** window.export / window.import: portable bundles (daemon/services/bundles.ts has the format). */
export function bundleMethods(ctx: ServiceContext, windows: WindowService): Handlers {
  const bundles = new BundleService(ctx, windows);
  return {
    'window.export': (p) => bundles.export(p),
    'window.import': (p) => bundles.import(p),
  };
}
