import { render } from 'preact';
import { App } from './app';
import { Client } from './client';
import './style.css';

const client = new Client();
render(<App client={client} />, document.getElementById('app')!);
void client.start();
