import { z } from 'zod';

export const HelloParams = z.object({
  protocolVersion: z.number().int().describe('the protocol version the client speaks'),
  client: z.object({ name: z.string().max(64), version: z.string().max(64) }).optional(),
});
export const HelloResult = z.object({
  protocolVersion: z.number().int(),
  daemonVersion: z.string(),
  pid: z.number().int(),
  capabilities: z.array(z.string()),
});

export const StatusParams = z.object({}).optional();
export const StatusResult = z.object({
  version: z.string(),
  protocolVersion: z.number().int(),
  pid: z.number().int(),
  uptimeSeconds: z.number(),
  startedAt: z.string(),
  socket: z.string(),
  dataDir: z.string(),
  configFile: z.string(),
  logFile: z.string().nullable(),
  counts: z.object({ sessions: z.number().int(), windows: z.number().int(), chunks: z.number().int() }),
  registryBytes: z.number().int(),
  gateway: z.object({ url: z.string(), listening: z.boolean() }).nullable(),
  engine: z.object({ kind: z.string(), url: z.string(), lmcacheUrl: z.string().nullable() }),
  connections: z.number().int(),
  inFlight: z.number().int(),
});

export const ShutdownParams = z.object({ reason: z.string().max(200).optional() }).optional();
export const ShutdownResult = z.object({ stopping: z.literal(true) });
