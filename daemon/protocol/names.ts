import { z } from 'zod';

/** Names are used as LevelDB keys, file names (llama.cpp state files) and log fields, so the rules are strict. */
export const WINDOW_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
export const SESSION_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
export const TAG_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export const WINDOW_NAME_RULE =
  'window names are 1-128 characters: a letter or digit first, then letters, digits, ".", "_" or "-"';
export const SESSION_ID_RULE =
  'session ids are 1-64 characters: a letter or digit first, then letters, digits, ".", "_" or "-"';
export const TAG_RULE = 'tags are 1-64 lower-case characters: a letter or digit first, then a-z, 0-9, ".", "_" or "-"';

export const windowName = z.string().regex(WINDOW_NAME_RE, WINDOW_NAME_RULE);
export const sessionId = z.string().regex(SESSION_ID_RE, SESSION_ID_RULE);
export const tag = z.string().regex(TAG_RE, TAG_RULE);
