import type { Handlers } from '../server/rpc-server.js';
import type { ServiceContext } from '../services/context.js';
import { resolveSessionData, type SessionService, toSessionInfo } from '../services/sessions.js';

export function sessionMethods(ctx: ServiceContext, sessions: SessionService): Handlers {
  return {
    'session.record': async (p) => {
      // A gateway turn still held back must not land after (and overwrite) this one.
      await sessions.settle(p.session);
      return toSessionInfo(await sessions.record(p));
    },
    'session.list': async (p) => {
      await sessions.settle();
      return sessions.list({ state: p?.state, model: p?.model, limit: p?.limit ?? 100, offset: p?.offset ?? 0 });
    },
    'session.get': async (p) => {
      await sessions.settle(p.session);
      const s = await sessions.get(p.session);
      const info = toSessionInfo(s);
      if (!p.messages) return info;
      const data = await resolveSessionData(ctx.reg, (await ctx.reg.getSessionData(s.id)) ?? {});
      return {
        ...info,
        ...(data.messages ? { messages: data.messages } : {}),
        ...(data.prompt !== undefined ? { prompt: data.prompt } : {}),
      };
    },
    'session.end': async (p) => toSessionInfo(await sessions.end(p.session)),
  };
}
