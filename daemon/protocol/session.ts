import { z } from 'zod';
import { sessionId } from './names.js';

/** An OpenAI chat message, kept exactly as sent (content may be a string or parts; tool calls pass through). */
export const ChatMessage = z
  .object({
    role: z.string().min(1).max(64),
    content: z.unknown().optional(),
  })
  .passthrough();
export type ChatMessage = z.infer<typeof ChatMessage>;

export const Usage = z.object({
  prompt_tokens: z.number().int().nonnegative(),
  completion_tokens: z.number().int().nonnegative().nullable().optional(),
  total_tokens: z.number().int().nonnegative().optional(),
  prompt_tokens_details: z.object({ cached_tokens: z.number().int().nullable().optional() }).nullable().optional(),
});
export type Usage = z.infer<typeof Usage>;

export const SessionState = z.enum(['active', 'frozen', 'thawed', 'ended']);
export type SessionState = z.infer<typeof SessionState>;

export const SessionInfo = z.object({
  id: z.string(),
  model: z.string(),
  state: SessionState,
  tokens: z.number().int(),
  maxModelLen: z.number().int().nullable(),
  turns: z.number().int(),
  kind: z.enum(['chat', 'completion']),
  createdAt: z.string(),
  updatedAt: z.string(),
  lastUsedAt: z.string(),
  sourceWindow: z.string().nullable(),
  lastWindow: z.string().nullable(),
  lastUsage: Usage.nullable(),
  slot: z.number().int().nullable(),
});
export type SessionInfo = z.infer<typeof SessionInfo>;

export const RecordParams = z
  .object({
    session: sessionId,
    model: z.string().min(1).max(256),
    messages: z.array(ChatMessage).max(100_000).optional(),
    prompt: z.union([z.string(), z.array(z.number().int().nonnegative())]).optional(),
    completion: z.string().optional(),
    usage: Usage.optional(),
  })
  .refine((p) => (p.messages === undefined) !== (p.prompt === undefined), {
    message: 'give exactly one of "messages" (chat) or "prompt" (completions)',
  });
export const RecordResult = SessionInfo;

export const ListSessionsParams = z
  .object({
    state: SessionState.optional(),
    model: z.string().optional(),
    limit: z.number().int().min(1).max(1000).default(100),
    offset: z.number().int().min(0).default(0),
  })
  .optional();
export const ListSessionsResult = z.object({ sessions: z.array(SessionInfo), total: z.number().int() });

export const GetSessionParams = z.object({ session: sessionId, messages: z.boolean().default(false) });
export const GetSessionResult = SessionInfo.extend({
  messages: z.array(ChatMessage).optional(),
  prompt: z.union([z.string(), z.array(z.number().int())]).optional(),
  cacheSalt: z.string().optional(),
});

export const EndSessionParams = z.object({ session: sessionId });
export const EndSessionResult = SessionInfo;
