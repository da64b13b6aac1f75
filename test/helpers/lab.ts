// The lab lives in control/lab (flannelctl lab up/down); the tests build the same clusters.
export * from '../../control/lab/cluster.ts';
