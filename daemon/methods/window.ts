import type { Handlers } from '../server/rpc-server.js';
import { type ServiceContext, saltFor } from '../services/context.js';
import { toWindowInfo, type WindowService } from '../services/windows.js';

export function windowMethods(ctx: ServiceContext, windows: WindowService): Handlers {
  return {
    'window.freeze': async (p) => (await windows.freeze(p)).result,
    'window.thaw': (p) => windows.thaw(p),
    'window.clone': async (p) => toWindowInfo(await windows.clone(p)),
    'window.delete': (p) => windows.delete(p),
    'window.list': (p) =>
      windows.list({
        tags: p?.tags,
        model: p?.model,
        session: p?.session,
        search: p?.search,
        sort: p?.sort ?? 'created',
        order: p?.order ?? 'desc',
        limit: p?.limit ?? 20,
        offset: p?.offset ?? 0,
      }),
    'window.get': async (p) => {
      const w = await windows.get(p.name);
      const out: Awaited<ReturnType<NonNullable<Handlers['window.get']>>> = toWindowInfo(w);
      if (p.lineage) out.lineage = await windows.lineage(w);
      if (p.messages) {
        const data = await ctx.reg.getWindowData(w.name);
        if (data?.messages) out.messages = data.messages;
      }
      if (p.tokens) out.tokenIds = await windows.tokensOf(w);
      if (p.salt) {
        out.cacheSalt = saltFor(ctx, w.lineageRoot);
        await ctx.audit.record({ action: 'window.salt-read', actor: 'rpc', target: w.name });
      }
      return out;
    },
  };
}
