import { z } from 'zod';
import { sessionId, tag, windowName } from './names.js';
import { ChatMessage } from './session.js';

export const Residency = z.enum(['ready', 'partial', 'lost', 'unknown']);
export type Residency = z.infer<typeof Residency>;

export const Fingerprint = z.object({
  model: z.string(),
  maxModelLen: z.number().int().nullable(),
  engineKind: z.string(),
  engineVersion: z.string().nullable(),
});
export type Fingerprint = z.infer<typeof Fingerprint>;

export const WindowInfo = z.object({
  name: z.string(),
  id: z.string(),
  session: z.string(),
  model: z.string(),
  fingerprint: Fingerprint,
  tokens: z.number().int(),
  chunks: z.number().int(),
  bytesStored: z.number().int(),
  description: z.string(),
  tags: z.array(z.string()),
  parent: z.string().nullable(),
  createdAt: z.string(),
  pinned: z.boolean(),
  residency: Residency,
  residencyCheckedAt: z.string().nullable(),
  kind: z.enum(['chat', 'completion']),
  stateFile: z.object({ size: z.number().int(), sha256: z.string() }).nullable(),
});
export type WindowInfo = z.infer<typeof WindowInfo>;

export const FreezeParams = z.object({
  session: sessionId,
  name: windowName,
  description: z.string().max(4096).optional(),
  tags: z.array(tag).max(32).optional(),
  prefill: z.boolean().default(true),
});
export const FreezeResult = z.object({
  name: z.string(),
  session: z.string(),
  tokens: z.number().int(),
  chunks: z.number().int(),
  newChunks: z.number().int(),
  bytesStored: z.number().int(),
  pinned: z.boolean(),
  cached: z.boolean(),
  durationMs: z.number(),
  engineMs: z.number(),
  warnings: z.array(z.string()),
});

export const ThawParams = z.object({
  name: windowName,
  newSession: sessionId.optional(),
  warm: z.boolean().default(true),
});
export const ThawResult = z.object({
  name: z.string(),
  session: z.string(),
  tokens: z.number().int(),
  warmed: z.boolean(),
  cachedTokens: z.number().int(),
  recomputedTokens: z.number().int(),
  maxCacheableTokens: z.number().int(),
  efficiency: z.number(),
  ttftMs: z.number().nullable(),
  engineMs: z.number(),
  durationMs: z.number(),
  residency: Residency,
  residencyByTier: z.record(z.string(), z.number().int()).nullable(),
  warnings: z.array(z.string()),
});

export const CloneParams = z.object({
  name: windowName,
  newName: windowName,
  description: z.string().max(4096).optional(),
  tags: z.array(tag).max(32).optional(),
});
export const CloneResult = WindowInfo;

export const DeleteParams = z.object({ name: windowName, cascade: z.boolean().default(false) });
export const DeleteResult = z.object({
  deleted: z.array(z.string()),
  chunksFreed: z.number().int(),
  bytesFreed: z.number().int(),
  lmcacheCleared: z.number().int(),
  warnings: z.array(z.string()),
});

export const SortKey = z.enum(['created', 'name', 'tokens']);
export const ListWindowsParams = z
  .object({
    tags: z.array(tag).max(32).optional(),
    model: z.string().max(256).optional(),
    session: sessionId.optional(),
    search: z.string().max(256).optional(),
    sort: SortKey.default('created'),
    order: z.enum(['asc', 'desc']).default('desc'),
    limit: z.number().int().min(1).max(1000).default(20),
    offset: z.number().int().min(0).default(0),
  })
  .optional();
export const ListWindowsResult = z.object({
  windows: z.array(WindowInfo),
  total: z.number().int(),
  limit: z.number().int(),
  offset: z.number().int(),
});

export const GetWindowParams = z.object({
  name: windowName,
  lineage: z.boolean().default(false),
  messages: z.boolean().default(false),
  tokens: z.boolean().default(false),
  salt: z.boolean().default(false),
});
export const LineageInfo = z.object({
  ancestors: z.array(z.string()),
  children: z.array(z.string()),
  root: z.string(),
  depth: z.number().int(),
  missingParent: z.string().nullable(),
});
export const GetWindowResult = WindowInfo.extend({
  lineage: LineageInfo.optional(),
  messages: z.array(ChatMessage).optional(),
  tokenIds: z.array(z.number().int()).optional(),
  cacheSalt: z.string().optional(),
});
