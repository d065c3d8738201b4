export { Monitor, type MonitorDeps, type MonitorStatus } from './monitor.js';
