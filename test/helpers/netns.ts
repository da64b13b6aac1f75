// The namespace helpers live with the lab in control/lab; tests use the same ones.
export * from '../../control/lab/netns.ts';
