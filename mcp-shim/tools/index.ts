import { registerAutoFreezeConfigTool } from './auto-freeze-config.js';
import { registerCacheStatsTool } from './cache-stats.js';
import { registerHealthCheckTool } from './health-check.js';
import { registerSessionListTool } from './session-list.js';
import type { ToolDeps } from './tool.js';
import { registerWindowCloneTool } from './window-clone.js';
import { registerWindowDeleteTool } from './window-delete.js';
import { registerWindowFreezeTool } from './window-freeze.js';
import { registerWindowListTool } from './window-list.js';
import { registerWindowStatusTool } from './window-status.js';
import { registerWindowThawTool } from './window-thaw.js';

export const TOOL_NAMES = [
  'window_freeze',
  'window_thaw',
  'window_clone',
  'window_list',
  'window_status',
  'window_delete',
  'session_list',
  'cache_stats',
  'auto_freeze_config',
  'health_check',
] as const;

export function registerTools(deps: ToolDeps): void {
  registerWindowFreezeTool(deps);
  registerWindowThawTool(deps);
  registerWindowCloneTool(deps);
  registerWindowListTool(deps);
  registerWindowStatusTool(deps);
  registerWindowDeleteTool(deps);
  registerSessionListTool(deps);
  registerCacheStatsTool(deps);
  registerAutoFreezeConfigTool(deps);
  registerHealthCheckTool(deps);
}
