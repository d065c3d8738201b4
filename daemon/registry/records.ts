import type { ChatMessage, Fingerprint, Residency, SessionState, Usage } from '../protocol/index.js';

/** What the registry stores for a session (the salt itself is never stored: it is derived from lineageRoot). */
export interface SessionRecord {
  id: string;
  model: string;
  state: SessionState;
  kind: 'chat' | 'completion';
  tokens: number;
  maxModelLen: number | null;
  turns: number;
  createdAt: string;
  updatedAt: string;
  lastUsedAt: string;
  sourceWindow: string | null;
  lastWindow: string | null;
  lastUsage: Usage | null;
  lineageRoot: string;
  slot: number | null;
  /** Token count at the last automatic freeze, so each threshold crossing freezes once. */
  autoFrozenAtTokens: number | null;
  autoFrozenAt: string | null;
}

/**
 * The exact conversation of a session, kept apart from the record so listing stays cheap. In storage the token
 * ids are bit-packed base64 (`tokens`), which is several times smaller and faster than a JSON number array.
 */
export interface SessionData {
  messages?: ChatMessage[];
  prompt?: string | number[];
  completion?: string;
  /** Exact token ids when a backend (or the gateway) knows them; otherwise freeze tokenizes the messages. */
  tokenIds?: number[];
  /**
   * A thawed session starts as exactly its window's context: instead of copying a possibly 100k-token context,
   * it points at the window until its next recorded turn replaces the data.
   */
  fromWindow?: string;
}

export interface StateFileRecord {
  file: string;
  size: number;
  sha256: string;
}

export interface WindowRecord {
  name: string;
  id: string;
  session: string;
  model: string;
  fingerprint: Fingerprint;
  tokens: number;
  chunkHashes: string[];
  bytesStored: number;
  description: string;
  tags: string[];
  parent: string | null;
  /** Set when the parent was deleted without cascade: the lineage edge is kept, marked. */
  parentDeleted?: boolean;
  lineageRoot: string;
  createdAt: string;
  pinned: boolean;
  residency: Residency;
  residencyCheckedAt: string | null;
  kind: 'chat' | 'completion';
  stateFile: StateFileRecord | null;
}

/**
 * Engine state a window holds (or an aborted freeze took) that is not given back yet. Written before it can leak
 * (in the delete's batch; right after freezeKv, removed by the freeze's batch) and removed once the engine confirmed
 * the release; anything left is retried at start and every minute.
 */
export interface PendingRelease {
  window: WindowRecord;
  /** The window's token ids, packed (codec packTokensBase64): the chunks may be gone by the time it runs. */
  tokens: string;
  reason: 'delete' | 'freeze-aborted';
  createdAt: string;
  attempts: number;
  lastError: string | null;
}

export interface WindowData {
  messages?: ChatMessage[];
  prompt?: string | number[];
}
